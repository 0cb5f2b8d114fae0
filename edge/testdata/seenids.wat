;; seenids copies the first x-request-id and traceparent the guest sees on
;; the request into x-seen-request-id and x-seen-traceparent, so that a
;; test can tell what a transform is told.
(module
  (import "http_handler" "get_header_values" (func $get_header_values (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "add_header_value" (func $add_header_value (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-request-id")        ;; 12 bytes
  (data (i32.const 16) "x-seen-request-id")  ;; 17 bytes
  (data (i32.const 48) "traceparent")        ;; 11 bytes
  (data (i32.const 64) "x-seen-traceparent") ;; 18 bytes
  ;; 1024: values buffer (4096 bytes)
  (func $copy (param $name i32) (param $name_len i32) (param $to i32) (param $to_len i32)
    (local $r i64)
    (local $len i32)
    (local $i i32)
    (local.set $r (call $get_header_values (i32.const 0) (local.get $name) (local.get $name_len) (i32.const 1024) (i32.const 4096)))
    (local.set $len (i32.wrap_i64 (local.get $r)))
    (if (i32.or (i64.eqz (i64.shr_u (local.get $r) (i64.const 32))) (i32.gt_u (local.get $len) (i32.const 4096)))
      (then (return)))
    ;; the first value ends at its NUL
    (block $done
      (loop $scan
        (br_if $done (i32.eqz (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (call $add_header_value (i32.const 0) (local.get $to) (local.get $to_len) (i32.const 1024) (local.get $i)))
  (func (export "handle_request") (result i64)
    (call $copy (i32.const 0) (i32.const 12) (i32.const 16) (i32.const 17))
    (call $copy (i32.const 48) (i32.const 11) (i32.const 64) (i32.const 18))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
