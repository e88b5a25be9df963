# safetensors tests: hand-built hostile files, round trips, sharded dirs, fuzz (unit); both
# directions against an independent Python implementation (reference).
sg_add_gtest(test_safetensors LABEL unit LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_safetensors.cpp)
sg_add_gtest(test_safetensors_reference LABEL reference LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_safetensors_reference.cpp)
