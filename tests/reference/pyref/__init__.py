"""Independent Python reference implementations (safetensors I/O, HF-semantics models).

These are what the C++ code is checked against; they must not depend on it.
Run with /usr/bin/python3 (Debian python3-torch 1.13, numpy 1.24).
"""
