# util tests
sg_add_gtest(test_util LABEL unit LIBS sg_util SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_file.cpp
             ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_threads.cpp)
