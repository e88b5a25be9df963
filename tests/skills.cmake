# skills tests: sparse skill files, grafting, the graft and inspect verbs
sg_add_gtest(test_skill LABEL unit LIBS sg_skills SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_skill.cpp NEEDS_BINARY)
sg_add_gtest(test_localize_cli LABEL unit LIBS sg_io SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_localize_cli.cpp NEEDS_BINARY)
sg_add_gtest(test_graft_util LABEL unit LIBS sg_skills SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_graft_util.cpp)
sg_add_gtest(test_remove_cli LABEL unit LIBS sg_io SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_remove_cli.cpp NEEDS_BINARY)
