;; probe is the host tests' guest. It picks its behaviour from the second
;; byte of the request URI: /loop spins forever, /trap hits unreachable,
;; /deny answers 403 itself, /grow asks for more memory than the cap allows
;; and reports the result, anything else appends the transform's config to
;; the request header x-chain on the way in and, with the response
;; buffered, to the response header x-chain-resp on the way out.
(module
  (import "http_handler" "enable_features" (func $enable_features (param i32) (result i32)))
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "add_header_value" (func $add_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (memory (export "memory") 1 1000)
  (data (i32.const 0) "x-chain")        ;; 7 bytes
  (data (i32.const 16) "x-chain-resp")  ;; 12 bytes
  (data (i32.const 32) "denied")        ;; 6 bytes
  (data (i32.const 48) "grow-failed")   ;; 11 bytes
  ;; 256: URI buffer (256 bytes); 1024: config buffer (1024 bytes)
  (func $config_len (result i32) (call $get_config (i32.const 1024) (i32.const 1024)))
  (func (export "handle_request") (result i64)
    (local $c i32)
    (drop (call $get_uri (i32.const 256) (i32.const 256)))
    (local.set $c (i32.load8_u (i32.const 257)))
    (if (i32.eq (local.get $c) (i32.const 108)) ;; l
      (then (loop $spin (br $spin))))
    (if (i32.eq (local.get $c) (i32.const 116)) ;; t
      (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 100)) ;; d
      (then
        (call $set_status_code (i32.const 403))
        (call $write_body (i32.const 1) (i32.const 32) (i32.const 6))
        (return (i64.const 0))))
    (if (i32.eq (local.get $c) (i32.const 103)) ;; g: 2000 pages is past any cap here
      (then
        (if (i32.eq (memory.grow (i32.const 2000)) (i32.const -1))
          (then (call $write_body (i32.const 1) (i32.const 48) (i32.const 11))))
        (return (i64.const 0))))
    (call $add_header_value (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 1024) (call $config_len))
    (drop (call $enable_features (i32.const 2))) ;; buffer_response
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (call $add_header_value (i32.const 1) (i32.const 16) (i32.const 12) (i32.const 1024) (call $config_len))))
