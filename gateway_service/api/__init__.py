"""The gateway's gRPC face: servicers, proto <-> domain mapping, the providers view."""
