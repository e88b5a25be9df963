# data tests (tasks)
sg_add_gtest(test_task_file LABEL unit LIBS sg_data SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_task_file.cpp)
sg_add_gtest(test_builtin_tasks LABEL unit LIBS sg_data SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_builtin_tasks.cpp NEEDS_BINARY)
