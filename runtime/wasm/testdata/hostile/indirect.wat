;; The call-tree bomb again, through a table: call_indirect, no loops.
(module
  (type $t (func (param i32)))
  (table 1 funcref)
  (elem (i32.const 0) $tree)
  (memory (export "memory") 1)
  (func $tree (type $t) (param $depth i32)
    (if (local.get $depth)
      (then
        (call_indirect (type $t) (i32.sub (local.get $depth) (i32.const 1)) (i32.const 0))
        (call_indirect (type $t) (i32.sub (local.get $depth) (i32.const 1)) (i32.const 0)))))
  (func (export "handle_request") (result i64)
    (call_indirect (type $t) (i32.const 40) (i32.const 0))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
