# skills tests: sparse skill files, grafting, the graft and inspect verbs
sg_add_gtest(test_skill LABEL unit LIBS sg_skills SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_skill.cpp NEEDS_BINARY)
