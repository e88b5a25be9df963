# compose tests: the streaming safetensors writer, merge methods and identities, YAML configs, the
# merge verb (unit); every method against an independent Python reference (reference).
sg_add_gtest(test_safetensors_writer LABEL unit LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_safetensors_writer.cpp)
sg_add_gtest(test_merge LABEL unit LIBS sg_compose SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_merge.cpp)
sg_add_gtest(test_merge_cli LABEL unit LIBS sg_skills SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_merge_cli.cpp NEEDS_BINARY)
sg_add_gtest(test_merge_reference LABEL reference LIBS sg_compose
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_merge_reference.cpp)
sg_add_gtest(test_stitch_cli LABEL unit LIBS sg_io SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_stitch_cli.cpp NEEDS_BINARY)
