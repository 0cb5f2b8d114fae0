;; The same through WASI's fd_read from stdin: two million empty vectors a
;; call, which wazero skips one by one, over and over.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 256)
  (func (export "handle_request") (result i64)
    (loop $spin
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 2097151) (i32.const 16777212)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
