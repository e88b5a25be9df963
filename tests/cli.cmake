# CLI tests: run the skillgraft executable
sg_add_gtest(test_cli LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_cli.cpp NEEDS_BINARY)
