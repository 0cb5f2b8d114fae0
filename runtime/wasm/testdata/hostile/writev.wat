;; The same through WASI's fd_write: one call with two million one-byte
;; vectors (the whole 16 MiB memory as iovecs), over and over. Each vector
;; is a write to the guest log, which drops it past its burst.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 256)
  (func (export "handle_request") (result i64)
    (local $p i32)
    ;; iovec i = {0, 1}: only the lengths need writing, the offsets stay 0
    (loop $fill
      (i32.store (i32.add (local.get $p) (i32.const 4)) (i32.const 1))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $p) (i32.const 16777216))))
    (loop $spin
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 2097151) (i32.const 16777212)))
      (br $spin))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))
