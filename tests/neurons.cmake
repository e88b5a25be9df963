# neuron-set tests: the models' FFN hook, coverage sets, IoU, ablation, and the neurons verb
sg_add_gtest(test_neurons LABEL unit LIBS sg_skills SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_neurons.cpp)
sg_add_gtest(test_neurons_cli LABEL unit LIBS sg_io SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_neurons_cli.cpp NEEDS_BINARY)
