;; poweredby is a transform written by hand in WebAssembly text, to show
;; that the ABI does not depend on Go. It answers GET /healthz itself with
;; 204 and stamps every other response with x-powered-by: perigee-wat.
;; Build it with wabt: wat2wasm poweredby.wat -o poweredby.wasm
(module
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "set_header_value" (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-powered-by")   ;; 12 bytes
  (data (i32.const 16) "perigee-wat")   ;; 11 bytes
  (data (i32.const 32) "/healthz")      ;; 8 bytes
  ;; the URI is read at 64, up to 64 bytes

  ;; same(a, b, n) compares n bytes at a and b.
  (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "handle_request") (result i64)
    (if (i32.and
          (i32.eq (call $get_uri (i32.const 64) (i32.const 64)) (i32.const 8))
          (call $same (i32.const 64) (i32.const 32) (i32.const 8)))
      (then
        (call $set_status_code (i32.const 204))
        (return (i64.const 0))))
    ;; Set before next, the header is sent with the upstream response.
    (call $set_header_value (i32.const 1) (i32.const 0) (i32.const 12) (i32.const 16) (i32.const 11))
    (i64.const 1))

  (func (export "handle_response") (param i32 i32)))
