# model tests
sg_add_gtest(test_model LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_model.cpp)
