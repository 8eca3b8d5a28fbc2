{
  "targets": [
    {
      "target_name": "edgemesh_native",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["native/addon.c", "native/udp_batch.c", "native/splice.c", "native/http/engine.c", "native/listeners.c", "native/tls_pump.c", "native/h2/engine.c"],
          "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
        }],
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
