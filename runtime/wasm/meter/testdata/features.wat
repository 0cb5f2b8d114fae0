;; Every kind of instruction and section the meter rewrites or steps over,
;; each export computing a number the test compares with and without the
;; meter.
(module
  (type $un (func (param i32) (result i32)))
  (import "env" "twice" (func $twice (param i32) (result i32)))
  (import "envg" "g" (global $imported i32))
  (memory (export "memory") 1 4)
  (table $t 4 funcref)
  (table $ext 2 externref)
  (global $counter (mut i32) (i32.const 0))
  (global $fref funcref (ref.func $inc))
  (elem (i32.const 0) $inc $dec)
  (elem (table $t) (i32.const 2) funcref (ref.func $twice) (ref.null func))
  (elem $passive funcref (ref.func $inc) (ref.func $dec))
  (elem declare func $swap)
  (data (i32.const 100) "hello")
  (data $later "world")
  (start $init)
  (func $init (global.set $counter (i32.const 7)))
  (func $inc (type $un) (i32.add (local.get 0) (i32.const 1)))
  (func $dec (type $un) (i32.sub (local.get 0) (i32.const 1)))
  (func $swap (param i32 i32) (result i32 i32) (local.get 1) (local.get 0))

  ;; Loops, br_if, br to the function's label, return from deep inside.
  (func $sum (export "sum") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $out
      (loop $next
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i32.add (local.get $acc) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eq (local.get $acc) (i32.const 1000000))
          (then (block (block (return (i32.const -1))))))
        (br $next)))
    (if (i32.gt_u (local.get $acc) (i32.const 5000))
      (then (br 1 (i32.const 5000))))
    (local.get $acc))

  ;; Multi-value: a block with params, a function with two results, and a
  ;; return of two values.
  (func $pair (param i32) (result i32 i32)
    (if (i32.eqz (local.get 0)) (then (return (i32.const 1) (i32.const 2))))
    (call $swap (local.get 0) (i32.const 10)))
  (func (export "multi") (param i32) (result i32)
    (call $pair (local.get 0))
    (block (param i32 i32) (result i32) (i32.sub)))

  ;; br_table, call_indirect, ref.func, table ops, the imports.
  (func (export "dispatch") (param i32) (result i32)
    (block $c (block $b (block $a
      (br_table $a $b $c (local.get 0)))
      (return (call_indirect (type $un) (i32.const 41) (i32.const 0))))
      (return (call_indirect (type $un) (i32.const 41) (i32.const 1))))
    (table.set $t (i32.const 3) (global.get $fref))
    (drop (table.grow $t (ref.null func) (i32.const 2)))
    (table.fill $t (i32.const 4) (ref.func $inc) (i32.const 2))
    (table.copy $t $t (i32.const 0) (i32.const 4) (i32.const 1))
    (table.init $t $passive (i32.const 1) (i32.const 1) (i32.const 1))
    (elem.drop $passive)
    (i32.add
      (i32.add (table.size $t) (ref.is_null (table.get $ext (i32.const 0))))
      (i32.add (call $twice (global.get $imported))
        (i32.add (call_indirect (type $un) (i32.const 1) (i32.const 1))
          (call_indirect (type $un) (i32.const 1) (i32.const 5))))))

  ;; Bulk memory, loads and stores, memory.grow and memory.size.
  (func (export "bulk") (result i32)
    (memory.fill (i32.const 0) (i32.const 3) (i32.const 50))
    (memory.copy (i32.const 200) (i32.const 100) (i32.const 5))
    (memory.init $later (i32.const 300) (i32.const 0) (i32.const 5))
    (data.drop $later)
    (drop (memory.grow (i32.const 1)))
    (i32.store16 offset=2 (i32.const 400) (i32.const 0x1234))
    (i32.add (memory.size)
      (i32.add (i32.load8_u (i32.const 49))
        (i32.add (i32.load8_u (i32.const 204))
          (i32.add (i32.load8_u (i32.const 300)) (i32.load16_u (i32.const 402)))))))

  ;; Numeric odds and ends: sign extension, saturating truncation, typed
  ;; select, 64-bit and float constants, globals.
  (func (export "numeric") (result i32)
    (local i64 f64 v128)
    (local.set 0 (i64.extend8_s (i64.const 0x80)))
    (local.set 1 (f64.const 3.75))
    (i32.add
      (i32.add (i32.wrap_i64 (local.get 0)) (i32.trunc_sat_f64_s (local.get 1)))
      (i32.add (global.get $counter)
        (select (result i32) (i32.const 100) (i32.trunc_sat_f32_u (f32.const -1)) (i32.const 1)))))

  ;; SIMD: const, shuffle, lanes, loads and stores.
  (func (export "simd") (result i32)
    (local $v v128)
    (local.set $v (i32x4.add (v128.const i32x4 1 2 3 4) (v128.const i32x4 10 20 30 40)))
    (v128.store offset=16 (i32.const 0) (local.get $v))
    (local.set $v (i8x16.shuffle 4 5 6 7 0 1 2 3 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
    (local.set $v (v128.load32_lane 1 (i32.const 16) (local.get $v)))
    (local.set $v (i32x4.replace_lane 3 (local.get $v) (i32.const 5)))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $v)) (i32x4.extract_lane 1 (local.get $v)))
      (i32.add (i32x4.extract_lane 3 (local.get $v))
        (i32x4.extract_lane 0 (v128.load32_zero (i32.const 20)))))))
