# tokenizer tests
# Unit: hand-computed encodings, pre-tokenizer, round trips, save/load, bad files.
sg_add_gtest(test_tokenizer LABEL unit LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_tokenizer.cpp)
# Unit: HF tokenizer.json of the Llama family (Llama-2 byte_fallback BPE, Llama-3 Split regex).
sg_add_gtest(test_tokenizer_hf LABEL unit LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_tokenizer_hf.cpp)
# Reference: tok512 against tests/reference/sp_tokenizer_ref.py (run with SG_PYTHON), GPT-2 against
# the gpt-3-encoder npm package run by node (skipped when scripts/setup.sh has not installed it).
sg_add_gtest(test_tokenizer_reference LABEL reference LIBS sg_io
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_tokenizer_reference.cpp)
