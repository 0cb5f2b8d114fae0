;; A loop of host calls that each do work in proportion to their argument:
;; get_header_values of a 4 MiB name ("aaa…"), which the host copies and
;; canonicalizes to look up. The meter charges every host call the same
;; fuel, so only the host can tell that the call's deadline has passed.
;; (set_uri did as much until what a guest sets was bounded by max_buffer.)
(module
  (import "http_handler" "get_header_values" (func $values (param i32 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 64)
  (func (export "handle_request") (result i64)
    (memory.fill (i32.const 0) (i32.const 97) (i32.const 4194304))
    (loop $spin
      (drop (call $values (i32.const 0) (i32.const 0) (i32.const 4194304) (i32.const 0) (i32.const 0)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
