{
  "targets": [
    {
      "target_name": "partune_blas",
      "sources": ["src/blas.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
