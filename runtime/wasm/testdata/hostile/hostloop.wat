;; An endless loop of host calls.
(module
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (loop $spin
      (drop (call $get_uri (i32.const 0) (i32.const 256)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
