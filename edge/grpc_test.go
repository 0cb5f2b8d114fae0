package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// testService is grpc-go's interop TestService, served by a real grpc-go
// server over h2c: each response payload is as large as asked, a
// response_status is returned as the call's status, and every call ends
// with an x-served-by trailer besides grpc-status.
type testService struct {
	testpb.UnimplementedTestServiceServer
	deadlines chan time.Duration // how long the server had left, per call that had a deadline
}

func payload(n int32) *testpb.Payload {
	return &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, int(n))}
}

func echoStatus(s *testpb.EchoStatus) error {
	if s == nil || s.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(s.Code), s.Message)
}

func (s *testService) served(ctx context.Context) {
	grpc.SetTrailer(ctx, metadata.Pairs("x-served-by", "grpc-backend"))
	if d, ok := ctx.Deadline(); ok {
		select {
		case s.deadlines <- time.Until(d):
		default:
		}
	}
}

func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.served(ctx)
	if err := echoStatus(req.ResponseStatus); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: append(req.Payload.GetBody(), bytes.Repeat([]byte{'x'}, int(req.ResponseSize))...)}}, nil
}

func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	s.served(stream.Context())
	if err := stream.SendHeader(metadata.Pairs("x-stream", "open")); err != nil {
		return err
	}
	for _, p := range req.ResponseParameters {
		select {
		case <-time.After(time.Duration(p.IntervalUs) * time.Microsecond):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload(p.Size)}); err != nil {
			return err
		}
	}
	return echoStatus(req.ResponseStatus)
}

func (s *testService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	s.served(stream.Context())
	var sum int32
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(req.Payload.GetBody()))
	}
}

func (s *testService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	s.served(stream.Context())
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := echoStatus(req.ResponseStatus); err != nil {
			return err
		}
		for _, p := range req.ResponseParameters {
			if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload(p.Size)}); err != nil {
				return err
			}
		}
	}
}

// grpcBackend serves the test service over h2c on loopback.
func grpcBackend(t *testing.T) (string, *testService) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	svc := &testService{deadlines: make(chan time.Duration, 16)}
	testpb.RegisterTestServiceServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String(), svc
}

// grpcNode is a node in front of a gRPC backend, with a route whose
// stream timeouts are short, so that a test can outlast them.
func grpcNode(t *testing.T, idle string) (*testNode, *testService) {
	t.Helper()
	url, svc := grpcBackend(t)
	n := startNode(t, listenAny+`services:
  grpc:
    protocol: h2c
    backends: [{url: "`+url+`"}]
routes:
  - name: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    service: grpc
    timeouts: {response_header: `+idle+`, client_body: `+idle+`, upstream_read: `+idle+`, upstream_write: `+idle+`}
`)
	return n, svc
}

// devCertTLS trusts the node's own certificate and nothing else.
func devCertTLS(t *testing.T, addr string) *tls.Config {
	t.Helper()
	c, err := tls.Dial("tcp", addr, insecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	name := "localhost"
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	return &tls.Config{RootCAs: pool, ServerName: name}
}

func grpcClient(t *testing.T, n *testNode) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(n.Addrs().HTTPS, grpc.WithTransportCredentials(credentials.NewTLS(devCertTLS(t, n.Addrs().HTTPS))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// The four kinds of call go through the node from grpc-go's client over
// HTTP/2 to grpc-go's server over h2c: messages both ways as they are
// sent, trailers back, statuses intact. The streams last longer than every
// route timeout, moving all the while.
func TestGRPCThroughTheNodeOverHTTP2(t *testing.T) {
	n, _ := grpcNode(t, "1s")
	c := grpcClient(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 5, Payload: payload(3)}, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Payload.Body) != 8 {
			t.Fatalf("payload %d bytes, want 8", len(resp.Payload.Body))
		}
		if got := trailer.Get("x-served-by"); len(got) != 1 || got[0] != "grpc-backend" {
			t.Fatalf("trailer %v", trailer)
		}
	})
	t.Run("error status", func(t *testing.T) {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "not ready: ünïcode & 100%"}})
		if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "not ready: ünïcode & 100%" {
			t.Fatalf("got %v, want FailedPrecondition with the message intact", err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		var params []*testpb.ResponseParameters
		for i := range 12 {
			params = append(params, &testpb.ResponseParameters{Size: int32(i + 1), IntervalUs: 200_000})
		}
		stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params,
			ResponseStatus: &testpb.EchoStatus{Code: int32(codes.DataLoss), Message: "after the stream"}})
		if err != nil {
			t.Fatal(err)
		}
		if md, err := stream.Header(); err != nil || md.Get("x-stream")[0] != "open" {
			t.Fatalf("header %v, %v", md, err)
		}
		for i := range 12 {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if len(m.Payload.Body) != i+1 {
				t.Fatalf("message %d has %d bytes", i, len(m.Payload.Body))
			}
		}
		if _, err := stream.Recv(); status.Code(err) != codes.DataLoss {
			t.Fatalf("end of stream: %v, want DataLoss", err)
		}
		if got := stream.Trailer().Get("x-served-by"); len(got) != 1 {
			t.Fatalf("trailer %v", stream.Trailer())
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		stream, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The answer's head comes only after the last message: the
		// response_header timeout starts at the request's end.
		want := 0
		for i := range 12 {
			time.Sleep(200 * time.Millisecond)
			if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: payload(int32(i))}); err != nil {
				t.Fatal(err)
			}
			want += i
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.AggregatedPayloadSize) != want {
			t.Fatalf("aggregated %d, want %d", resp.AggregatedPayloadSize, want)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		stream, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each answer must come back before the next question is sent:
		// the node may hold neither direction back.
		for i := range 12 {
			time.Sleep(200 * time.Millisecond)
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i + 1)}}}); err != nil {
				t.Fatal(err)
			}
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			if len(m.Payload.Body) != i+1 {
				t.Fatalf("answer %d has %d bytes", i, len(m.Payload.Body))
			}
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "bye"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.Aborted {
			t.Fatalf("end: %v, want Aborted", err)
		}
	})
}

// A client's deadline reaches the backend as grpc-timeout, and the call
// ends when it passes.
func TestGRPCDeadlinePropagates(t *testing.T) {
	n, svc := grpcNode(t, "30s")
	c := grpcClient(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 20_000_000}}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the call ended after %v, its deadline was 2s", took)
	}
	select {
	case left := <-svc.deadlines:
		if left <= 0 || left > 2*time.Second {
			t.Fatalf("the backend had %v left of a 2s deadline", left)
		}
	default:
		t.Fatal("the backend saw no deadline")
	}
}

// A stream on which nothing moves either way is cut at the route's
// upstream_read, though the backend would answer much later.
func TestGRPCIdleStreamIsCut(t *testing.T) {
	n, _ := grpcNode(t, "1s")
	c := grpcClient(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 20_000_000}}})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil || status.Code(err) == codes.DeadlineExceeded {
		t.Fatalf("got %v, want the stream cut", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("an idle stream lasted %v past a 1s upstream_read", took)
	}
}

// grpcFrame is one length-prefixed message, uncompressed.
func grpcFrame(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

// readGRPCFrame reads one length-prefixed message into m.
func readGRPCFrame(r io.Reader, m proto.Message) error {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	if head[0] != 0 {
		return fmt.Errorf("compressed flag %d", head[0])
	}
	b := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// grpcOverH3 starts a gRPC call over HTTP/3 by hand (grpc-go has no
// HTTP/3): the request body is a pipe the test writes frames to.
func h3Call(t *testing.T, c *http.Client, n *testNode, method string) (*io.PipeWriter, func() *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, "https://"+n.Addrs().HTTPS+"/grpc.testing.TestService/"+method, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "20S")
	type result struct {
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := c.Do(req)
		got <- result{resp, err}
	}()
	// The head may wait for the first message (a client stream's waits
	// for the last): send the first before waiting for it.
	return pw, func() *http.Response {
		t.Helper()
		r := <-got
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resp.StatusCode != http.StatusOK || !strings.HasPrefix(r.resp.Header.Get("Content-Type"), "application/grpc") {
			t.Fatalf("%s: %d %v", method, r.resp.StatusCode, r.resp.Header)
		}
		t.Cleanup(func() { r.resp.Body.Close() })
		return r.resp
	}
}

// grpcStatus is the call's status from the trailers, after the body.
func grpcStatus(t *testing.T, resp *http.Response) (string, string) {
	t.Helper()
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 0 {
		t.Fatalf("after the last message: %q, %v", b, err)
	}
	return resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
}

// The same calls over HTTP/3 with gRPC's framing written by hand: the
// streamed messages arrive one by one and the grpc-status trailer comes back.
func TestGRPCThroughTheNodeOverHTTP3(t *testing.T) {
	n, _ := grpcNode(t, "1s")
	c := h3Client(t)

	t.Run("unary", func(t *testing.T) {
		pw, respc := h3Call(t, c, n, "UnaryCall")
		pw.Write(grpcFrame(&testpb.SimpleRequest{ResponseSize: 4, Payload: payload(2)}))
		pw.Close()
		resp := respc()
		var m testpb.SimpleResponse
		if err := readGRPCFrame(resp.Body, &m); err != nil || len(m.Payload.Body) != 6 {
			t.Fatalf("response %v, %v", &m, err)
		}
		if code, _ := grpcStatus(t, resp); code != "0" || resp.Trailer.Get("X-Served-By") != "grpc-backend" {
			t.Fatalf("trailers %v", resp.Trailer)
		}
	})
	t.Run("error status", func(t *testing.T) {
		pw, respc := h3Call(t, c, n, "UnaryCall")
		pw.Write(grpcFrame(&testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.PermissionDenied), Message: "no"}}))
		pw.Close()
		resp := respc()
		// An error without messages is trailers-only: the status is in the head.
		code, msg := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
		if code == "" {
			code, msg = grpcStatus(t, resp)
		}
		if code != fmt.Sprint(int(codes.PermissionDenied)) || msg != "no" {
			t.Fatalf("status %q %q, head %v, trailers %v", code, msg, resp.Header, resp.Trailer)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		var params []*testpb.ResponseParameters
		for i := range 8 {
			params = append(params, &testpb.ResponseParameters{Size: int32(i + 1), IntervalUs: 200_000})
		}
		pw, respc := h3Call(t, c, n, "StreamingOutputCall")
		pw.Write(grpcFrame(&testpb.StreamingOutputCallRequest{ResponseParameters: params}))
		pw.Close()
		resp := respc()
		for i := range 8 {
			var m testpb.StreamingOutputCallResponse
			if err := readGRPCFrame(resp.Body, &m); err != nil || len(m.Payload.Body) != i+1 {
				t.Fatalf("message %d: %v, %v", i, &m, err)
			}
		}
		if code, _ := grpcStatus(t, resp); code != "0" {
			t.Fatalf("trailers %v", resp.Trailer)
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		pw, respc := h3Call(t, c, n, "StreamingInputCall")
		want := 0
		for i := range 8 {
			time.Sleep(200 * time.Millisecond)
			if _, err := pw.Write(grpcFrame(&testpb.StreamingInputCallRequest{Payload: payload(int32(i))})); err != nil {
				t.Fatal(err)
			}
			want += i
		}
		pw.Close()
		resp := respc()
		var m testpb.StreamingInputCallResponse
		if err := readGRPCFrame(resp.Body, &m); err != nil || int(m.AggregatedPayloadSize) != want {
			t.Fatalf("response %v, %v; want %d", &m, err, want)
		}
		if code, _ := grpcStatus(t, resp); code != "0" {
			t.Fatalf("trailers %v", resp.Trailer)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		pw, respc := h3Call(t, c, n, "FullDuplexCall")
		ask := func(i int) {
			pw.Write(grpcFrame(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i + 1)}}}))
		}
		ask(0)
		resp := respc()
		for i := range 8 {
			var m testpb.StreamingOutputCallResponse
			if err := readGRPCFrame(resp.Body, &m); err != nil || len(m.Payload.Body) != i+1 {
				t.Fatalf("answer %d: %v, %v", i, &m, err)
			}
			time.Sleep(200 * time.Millisecond)
			ask(i + 1)
		}
		var m testpb.StreamingOutputCallResponse
		if err := readGRPCFrame(resp.Body, &m); err != nil {
			t.Fatal(err)
		}
		pw.Write(grpcFrame(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "bye"}}))
		if code, msg := grpcStatus(t, resp); code != fmt.Sprint(int(codes.Aborted)) || msg != "bye" {
			t.Fatalf("status %q %q", code, msg)
		}
		pw.Close()
	})
}
