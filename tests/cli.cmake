# CLI tests: run the skillgraft executable
sg_add_gtest(test_cli LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_cli.cpp NEEDS_BINARY)
# The quick demo trains four specialists: minutes on 2 cores, so it runs alone (no oversubscribed threads).
sg_add_gtest(test_demo LABEL slow LIBS sg_io SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_demo.cpp NEEDS_BINARY SERIAL)
