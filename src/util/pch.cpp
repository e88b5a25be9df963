// Translation unit that builds the precompiled header (see src/util/torch_pch.h).
