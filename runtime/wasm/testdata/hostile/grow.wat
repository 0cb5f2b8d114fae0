;; Memory growth: a page at a time, as long as memory.grow gives it, then
;; an endless loop holding it all.
(module
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (block $full
      (loop $more
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (loop $spin (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
