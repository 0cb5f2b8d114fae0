;; An endless loop.
(module
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (loop $spin (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
