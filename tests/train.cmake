# train tests: optimizer/schedule/clipping/batching/selection on hand-computed cases, and
# skillgraft finetune on stories260K (SIGKILL + --resume, LoRA, select, bad inputs).
sg_add_gtest(test_train LABEL unit LIBS sg_train SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_train.cpp)
sg_add_gtest(test_finetune_cli LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_finetune_cli.cpp
             NEEDS_BINARY)
sg_add_gtest(test_pretrain_cli LABEL unit LIBS sg_util SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_pretrain_cli.cpp NEEDS_BINARY)
