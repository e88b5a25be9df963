# eval tests: metrics on hand-computed cases, the evaluator on stories260K, the CLI, and the
# Python reference (tests/reference/eval_ref.py) on a tiny random byte-level Llama.
sg_add_gtest(test_eval_metrics LABEL unit LIBS sg_eval SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_eval_metrics.cpp)
sg_add_gtest(test_evaluator LABEL unit LIBS sg_eval SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_evaluator.cpp)
sg_add_gtest(test_eval_cli LABEL unit LIBS sg_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_eval_cli.cpp NEEDS_BINARY)

add_test(NAME reference_fixture_eval
         COMMAND ${SG_PYTHON} ${CMAKE_SOURCE_DIR}/tests/reference/eval_ref.py --out ${SG_REFDATA_DIR}/eval)
set_tests_properties(reference_fixture_eval PROPERTIES FIXTURES_SETUP refdata_eval LABELS reference)
sg_add_gtest(test_reference_eval LABEL reference LIBS sg_eval FIXTURES refdata_eval
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/reference/test_reference_eval.cpp)
