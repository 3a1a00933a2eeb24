"""Hand-written GPU kernels (Triton), each with a plain-torch equivalent it is tested against."""
