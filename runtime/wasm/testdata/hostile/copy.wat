;; Huge copies and no loop: a call tree whose every leaf copies 24 MiB.
(module
  (memory (export "memory") 768 768)
  (func $tree (param $depth i32)
    (if (local.get $depth)
      (then
        (call $tree (i32.sub (local.get $depth) (i32.const 1)))
        (call $tree (i32.sub (local.get $depth) (i32.const 1))))
      (else
        (memory.copy (i32.const 0) (i32.const 0x1800000) (i32.const 0x1800000)))))
  (func (export "handle_request") (result i64)
    (call $tree (i32.const 30))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
