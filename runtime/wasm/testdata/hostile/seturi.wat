;; A loop of host calls that each do work in proportion to their argument:
;; set_uri with a 4 MiB URI ("/aaa…"), which the host copies and parses.
;; The meter charges every host call the same fuel, so only the host can
;; tell that the call's deadline has passed.
(module
  (import "http_handler" "set_uri" (func $set_uri (param i32 i32)))
  (memory (export "memory") 64)
  (func (export "handle_request") (result i64)
    (i32.store8 (i32.const 0) (i32.const 47))
    (memory.fill (i32.const 1) (i32.const 97) (i32.const 4194303))
    (loop $spin
      (call $set_uri (i32.const 0) (i32.const 4194304))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
