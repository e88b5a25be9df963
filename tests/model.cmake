# model tests
sg_add_gtest(test_model LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_model.cpp)

# Reference fixtures: independent Python writes the checkpoints and expected values at test time.
add_test(NAME reference_fixture_models
         COMMAND ${SG_PYTHON} ${CMAKE_SOURCE_DIR}/tests/reference/make_model_refs.py --out ${SG_REFDATA_DIR}/models)
set_tests_properties(reference_fixture_models PROPERTIES FIXTURES_SETUP refdata_models LABELS reference)
add_test(NAME reference_fixture_stories
         COMMAND ${SG_PYTHON} ${CMAKE_SOURCE_DIR}/tests/reference/llama2c_ref.py
                 --model ${CMAKE_SOURCE_DIR}/data/models/stories260K.bin
                 --tokenizer ${CMAKE_SOURCE_DIR}/data/models/tok512.bin
                 --steps 120 --out ${SG_REFDATA_DIR}/stories260K_greedy.safetensors)
set_tests_properties(reference_fixture_stories PROPERTIES FIXTURES_SETUP refdata_stories LABELS reference)

sg_add_gtest(test_reference_models LABEL reference LIBS sg_model FIXTURES refdata_models
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_reference_models.cpp)
sg_add_gtest(test_reference_stories LABEL reference LIBS sg_model FIXTURES refdata_stories
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_reference_stories.cpp)
sg_add_gtest(test_lora LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_lora.cpp)
sg_add_gtest(test_lora_reference LABEL reference LIBS sg_model
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_lora_reference.cpp)
