;; A trap on every request: a storm of them must not wear the node down.
(module
  (memory (export "memory") 16)
  (func (export "handle_request") (result i64)
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 0x100000))
    unreachable)
  (func (export "handle_response") (param i32 i32)))
