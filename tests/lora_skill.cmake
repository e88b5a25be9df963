# LoRA / dense skills, conversions (SVD), PEFT adapter import/export, the extract verb
sg_add_gtest(test_lora_skill LABEL unit LIBS sg_lib SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_lora_skill.cpp NEEDS_BINARY)
