;; Huge fills and no loop: a call tree whose every leaf fills 48 MiB.
(module
  (memory (export "memory") 768 768)
  (func $tree (param $depth i32)
    (if (local.get $depth)
      (then
        (call $tree (i32.sub (local.get $depth) (i32.const 1)))
        (call $tree (i32.sub (local.get $depth) (i32.const 1))))
      (else
        (memory.fill (i32.const 0) (i32.const 0xab) (i32.const 0x3000000)))))
  (func (export "handle_request") (result i64)
    (call $tree (i32.const 30))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
