;; A call-tree bomb: each level calls itself twice, 2^40 calls in all, and
;; there is not one loop, so nothing that checks only loop headers stops it.
(module
  (memory (export "memory") 1)
  (func $tree (param $depth i32)
    (if (local.get $depth)
      (then
        (call $tree (i32.sub (local.get $depth) (i32.const 1)))
        (call $tree (i32.sub (local.get $depth) (i32.const 1))))))
  (func (export "handle_request") (result i64)
    (call $tree (i32.const 40))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
