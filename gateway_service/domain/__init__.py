"""The vocabulary chat/ and providers/ both stand on: the request, the events, the failure taxonomy.

Nothing here imports grpc, chat/ or providers/.
"""
