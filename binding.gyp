{
  "targets": [
    {
      "target_name": "peercred",
      "sources": [
        "native/peercred.c"
      ],
      "cflags": [
        "-Wall",
        "-Wextra",
        "-O2"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ],
      "conditions": [
        [
          "OS!='linux'",
          {
            "sources!": [
              "native/peercred.c"
            ]
          }
        ]
      ]
    },
    {
      "target_name": "ecverify",
      "sources": [
        "native/ecverify.c"
      ],
      "cflags": [
        "-Wall",
        "-Wextra",
        "-O2"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ]
    },
    {
      "target_name": "ecsign",
      "sources": [
        "native/ecsign.c"
      ],
      "cflags": [
        "-Wall",
        "-Wextra",
        "-O2"
      ],
      "defines": [
        "NAPI_VERSION=8"
      ]
    }
  ]
}
