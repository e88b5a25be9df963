# data tests (tasks)
sg_add_gtest(test_task_file LABEL unit LIBS sg_data SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_task_file.cpp)
