# library tests: sha256, the skill library (catalog + blobs: round trips, verify, concurrency, crash
# safety under SIGKILL), the library verb
sg_add_gtest(test_sha256 LABEL unit LIBS sg_util SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sha256.cpp)
sg_add_gtest(test_library LABEL unit LIBS sg_lib SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_library.cpp)
sg_add_gtest(test_library_cli LABEL unit LIBS sg_lib SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_library_cli.cpp NEEDS_BINARY)
