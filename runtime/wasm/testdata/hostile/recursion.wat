;; Recursion without end: the call stack, not the deadline, stops it.
(module
  (memory (export "memory") 1)
  (func $down (param i64) (result i64)
    (i64.add (call $down (i64.add (local.get 0) (i64.const 1))) (i64.const 1)))
  (func (export "handle_request") (result i64)
    (drop (call $down (i64.const 0)))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
