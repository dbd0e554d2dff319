"""Generated gRPC and protobuf modules of the toolvault.v1 API (see proto/generate.py)."""
