;; The same through WASI: random_get filling the whole 16 MiB memory, over
;; and over.
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 256)
  (func (export "handle_request") (result i64)
    (loop $spin
      (drop (call $random_get (i32.const 0) (i32.const 16777216)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
