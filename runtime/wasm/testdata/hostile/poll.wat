;; The same through WASI's poll_oneoff: 200,000 clock subscriptions of no
;; timeout each call, over and over.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 256)
  (func (export "handle_request") (result i64)
    (loop $spin
      (drop (call $poll (i32.const 0) (i32.const 9600000) (i32.const 200000) (i32.const 16777212)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
