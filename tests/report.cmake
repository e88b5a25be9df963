# report tests: the HTML page from hand-made results, and the report verb
sg_add_gtest(test_report LABEL unit LIBS sg_report SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_report.cpp NEEDS_BINARY)
