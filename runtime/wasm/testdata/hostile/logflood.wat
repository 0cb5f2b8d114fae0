;; Floods every log path a guest has: http-wasm's log, and stdout and
;; stderr through WASI, each time with the whole 64 KiB page as the text.
(module
  (import "http_handler" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (local $i i32)
    ;; one iovec at 0: the whole page
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $flood
      (call $log (i32.const 0) (i32.const 0) (i32.const 65536))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_u (local.get $i) (i32.const 2000))))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
