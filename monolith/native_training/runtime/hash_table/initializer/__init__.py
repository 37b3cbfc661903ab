"""Generated protobuf modules of monolith's hash table (see protos/)."""
