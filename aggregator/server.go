package aggregator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go/http3"

	"perigee/aggregator/dashboard"
	"perigee/aggregator/store"
	"perigee/connlimit"
	"perigee/h3serve"
	"perigee/telemetry/wire"
)

// server holds what the handlers share.
type server struct {
	cfg     Config
	log     *slog.Logger
	fleet   *fleet
	dedup   *dedup
	store   *store.Store
	rollups *rollups
	opener  *wire.Opener
	tokens  map[[32]byte]string // sha256(token) → node
	places  map[string]Coord
	metrics *metrics
	// budgets holds each named node to its share of the store, and
	// refusals rate-limits the lines that refusals (and the export's
	// failures) log.
	budgets  *nodeBudgets
	refusals refusalLog
	slots    chan struct{} // one per ingest being read or decoded
	// reading is the nodes a batch of which is being read or decoded.
	readingMu sync.Mutex
	reading   map[string]bool
	// storeQueries has one slot per query reading the rollups or the
	// store, each of which may hold a segment in memory.
	storeQueries chan struct{}
	// building has one slot per answer being built from the in-memory
	// view, and answerBytes counts the bytes of answers being written
	// (answers.go).
	building    chan struct{}
	answerBytes *byteBudget
	// exportCaughtUp is when the exporter last found nothing left to
	// send, unix milliseconds.
	exportCaughtUp atomic.Int64
	warm           atomic.Bool // the fleet view holds the store's last memory_window
}

// A client has defaultReadHeader to send a request's headers, on TCP and
// on each HTTP/3 stream, and a connection with no request in flight is
// closed after defaultIdle (what net/http took from ReadTimeout before).
// A response must be written within defaultWrite of its request's
// headers, a body read in ReadTimeout (a minute) included: a client that
// takes none of it would otherwise hold its handler as long as it keeps
// its connection, and the API takes no token.
const (
	defaultReadHeader = 10 * time.Second
	defaultIdle       = time.Minute
	defaultWrite      = 2 * time.Minute
)

// maxHeaderBytes bounds a request's headers, a token and a few fields
// (a browser's cookies for the dashboard); larger get 431. Over HTTP/3
// each of a connection's 100 streams may hold that much until the header
// deadline: net/http's and quic-go's default of 1 MiB made that 100 MiB.
const maxHeaderBytes = 32 << 10

// Server is a running aggregator's listeners and state.
type Server struct {
	s      *server
	warmTo store.Pos // where the store ended at start
	tcp    net.Listener
	udp    net.PacketConn
	https  *http.Server
	h3     *h3serve.Server
	limits []*connlimit.Limiter // the TCP listener's, then QUIC's
}

// Run serves until ctx is done: see NewServer and Serve.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	srv, err := NewServer(cfg, log)
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
}

// NewServer validates cfg, replays the store into memory and binds TCP and
// UDP on the listen address (a port of 0 picks one, the same for both).
func NewServer(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("component", "aggregator")
	byToken, err := cfg.loadTokens()
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	s := &server{cfg: cfg, log: log, fleet: newFleet(cfg.MemoryWindow), dedup: newDedup(), tokens: map[[32]byte]string{}, places: placesFor(cfg),
		slots: make(chan struct{}, cfg.MaxConcurrentIngests), reading: map[string]bool{},
		storeQueries: make(chan struct{}, maxStoreQueries), building: make(chan struct{}, maxAnswersBuilding), answerBytes: newByteBudget(maxAnswerBytes)}
	s.refusals = newRefusalLog(slices.Concat(refusedResults, []string{exportFailure}))
	var named []string
	for tok, node := range byToken {
		s.tokens[sha256.Sum256([]byte(tok))] = node
		if node == anyNode {
			log.Warn(devTokenWarning)
		} else {
			named = append(named, node)
		}
	}
	var apiToken *[32]byte
	if cfg.APITokenFile != "" {
		tok, err := readAPIToken(cfg.APITokenFile)
		if err != nil {
			return nil, fmt.Errorf("aggregator: %w", err)
		}
		apiToken = &tok
	}
	s.budgets = newNodeBudgets(int64(cfg.MaxStoreBytes), cfg.Retention, named, time.Now())
	// What sizes the bound: a node sending faster than its rate is refused.
	log.Info("store bounds", "max_store_bytes", int64(cfg.MaxStoreBytes), "named_nodes", len(named),
		"node_burst_bytes", int64(s.budgets.burst), "node_bytes_per_second", math.Round(s.budgets.rate))
	if s.opener, err = wire.NewOpener(int64(cfg.MaxDecompressed)); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	cert, err := loadCertificate(cfg)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	start := time.Now()
	s.store, err = store.Open(filepath.Join(cfg.DataDir, "store"), store.Options{MaxBytes: int64(cfg.MaxStoreBytes), MaxRecord: s.maxBody()}, log)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	s.rollups = newRollups(filepath.Join(cfg.DataDir, "rollup"))
	if err := os.MkdirAll(s.rollups.dir, 0o750); err != nil {
		s.store.Close()
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	tail, err := s.loadDedup()
	if err != nil {
		s.store.Close()
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	batches, records := s.dedup.totals()
	log.Info("store opened", "batches", batches, "records", records, "read_since_checkpoint", tail, "took", time.Since(start).Round(time.Millisecond))
	srv := &Server{s: s, warmTo: s.store.End(),
		limits: []*connlimit.Limiter{connlimit.New("https", cfg.Connections, log), connlimit.New("http3", cfg.Connections, log)}}
	reg := prometheus.NewRegistry()
	s.metrics = newMetrics(reg, s, srv.limits)
	if srv.tcp, err = net.Listen("tcp", cfg.Listen); err != nil {
		s.store.Close()
		return nil, fmt.Errorf("aggregator: listen: %w", err)
	}
	srv.tcp = connlimit.Listen(srv.tcp, srv.limits[0])
	if srv.udp, err = net.ListenPacket("udp", srv.tcp.Addr().String()); err != nil {
		srv.tcp.Close()
		s.store.Close()
		return nil, fmt.Errorf("aggregator: listen udp: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ingest", s.handleIngest)
	mux.Handle("GET /metrics", s.answerFrom(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	s.routes(mux)
	mux.Handle("/", dashboard.Handler())
	var handler http.Handler = mux
	if apiToken != nil {
		handler = guardAPI(*apiToken, mux)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	readHeader, idle, write := cmp.Or(cfg.readHeader, defaultReadHeader), cmp.Or(cfg.idle, defaultIdle), cmp.Or(cfg.write, defaultWrite)
	// Anyone may open a QUIC connection: h3serve bounds each stream's
	// header read, which http3.Server leaves unbounded, and IdleTimeout
	// closes a connection with no request left, keep-alives or not.
	srv.h3 = h3serve.New(&http3.Server{Handler: handler, IdleTimeout: idle, MaxHeaderBytes: maxHeaderBytes, Logger: log},
		http3.ConfigureTLSConfig(tlsConf.Clone()), readHeader, h3serve.WithConnLimit(srv.limits[1]), h3serve.WithWriteTimeout(write))
	_, port, _ := net.SplitHostPort(srv.Addr())
	altSvc := `h3=":` + port + `"; ma=86400`
	srv.https = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Advertise HTTP/3 on every TCP answer; shippers move to it.
			w.Header().Set("Alt-Svc", altSvc)
			handler.ServeHTTP(w, r)
		}),
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       time.Minute,
		WriteTimeout:      write, // over HTTP/2, each stream's
		MaxHeaderBytes:    maxHeaderBytes,
		// An HTTP/2 connection its client stopped reading: the stream
		// resets of WriteTimeout would wait behind the stalled writer.
		HTTP2:       &http.HTTP2Config{WriteByteTimeout: idle},
		IdleTimeout: idle,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return srv, nil
}

// loadDedup reads the dedup checkpoint and then the records stored after
// it, so that start costs what was written since the last checkpoint, not
// the whole retention. It returns how many records it read.
func (s *server) loadDedup() (int, error) {
	from, err := s.dedup.load(s.cfg.DataDir)
	if err != nil {
		s.log.Error("dedup checkpoint unreadable, reading the whole store", "err", err)
	}
	n := 0
	err = s.store.Scan(from, func(at time.Time, rec []byte, _ store.Pos) error {
		n++
		if b, ok := s.openStored(rec, nil); ok {
			s.dedup.commit(b.Node, b.Seq, b.Records())
		}
		return nil
	})
	return n, err
}

// openStored decodes one stored batch. A record that no longer opens (say
// the size limit was lowered) is skipped and logged. A query passes its
// budget, from which the batch's decompressed size is taken before it is
// decompressed; once spent, nothing more is decoded (budget.spent).
func (s *server) openStored(rec []byte, budget *decodeBudget) (*wire.Batch, bool) {
	f, err := wire.ParseFrame(rec, -1)
	if err == nil {
		if !budget.take(f.RawLen) {
			return nil, false
		}
		var b *wire.Batch
		if b, err = s.opener.Open(f); err == nil {
			return b, true
		}
	}
	s.log.Warn("stored batch skipped", "err", err)
	return nil, false
}

// warmView fills the in-memory view with the last memory window of the store,
// up to where the store ended at start (later batches arrived live). It
// runs after the listeners open, so a restart answers at once; until it is
// done the fleet view shows less history.
func (s *server) warmView(ctx context.Context, to store.Pos) {
	start := time.Now()
	n := 0
	errStop := errors.New("stop")
	err := s.store.ScanSince(start.Add(-s.cfg.MemoryWindow), func(at time.Time, rec []byte, next store.Pos) error {
		if ctx.Err() != nil || next.Seg > to.Seg || (next.Seg == to.Seg && next.Off > to.Off) {
			return errStop
		}
		if b, ok := s.openStored(rec, nil); ok {
			s.fleet.apply(b, at, restamp(b, at, s.cfg.MaxSkew))
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		s.log.Error("warming the fleet view", "err", err)
	}
	s.warm.Store(true)
	s.log.Info("fleet view warmed", "batches", n, "took", time.Since(start).Round(time.Millisecond))
}

// checkpointLoop saves the dedup state every checkpointEvery and at the
// end, which bounds what a restart reads.
const checkpointEvery = 10 * time.Second

func (s *server) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.dedup.save(s.cfg.DataDir, s.store.End()); err != nil {
			s.log.Error("dedup checkpoint", "err", err)
		}
	}
}

// Addr is the bound address, TCP and UDP alike.
func (srv *Server) Addr() string { return srv.tcp.Addr().String() }

// Serve runs HTTPS (HTTP/1.1 and HTTP/2) and HTTP/3 until ctx is done,
// then shuts both down and closes the store.
func (srv *Server) Serve(ctx context.Context) error {
	s := srv.s
	s.log.Info("aggregator serving", "addr", srv.Addr(), "data_dir", s.cfg.DataDir)
	errc := make(chan error, 2)
	go func() { errc <- srv.https.ServeTLS(srv.tcp, "", "") }()
	go func() { errc <- srv.h3.Serve(srv.udp) }()
	var wg sync.WaitGroup
	bg, stop := context.WithCancel(ctx)
	wg.Go(func() { s.warmView(bg, srv.warmTo) })
	wg.Go(func() { s.retentionLoop(bg) })
	wg.Go(func() { s.checkpointLoop(bg) })
	wg.Go(func() { s.rollupLoop(bg) })
	if ex := s.cfg.Export; ex != nil {
		wg.Go(func() { s.exportLoop(bg, ex) })
	}
	if rw := s.cfg.RemoteWrite; rw != nil {
		wg.Go(func() { s.remoteWriteLoop(bg, rw) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("aggregator: serve: %w", err)
	}
	stop()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// HTTP/3 refuses new streams while TCP drains, then its connections,
	// which clients keep open, are closed, and their handlers waited for.
	h3done := make(chan struct{})
	go func() {
		_ = srv.h3.Shutdown(shutdown)
		close(h3done)
	}()
	_ = srv.https.Shutdown(shutdown)
	_ = srv.h3.Close()
	<-h3done
	_ = srv.udp.Close()
	wg.Wait()
	if cerr := s.dedup.save(s.cfg.DataDir, s.store.End()); err == nil && cerr != nil {
		err = fmt.Errorf("aggregator: %w", cerr)
	}
	if cerr := s.store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("aggregator: %w", cerr)
	}
	// The segment being written is complete now: its rollups go to disk,
	// so a restart need not read it again.
	s.writeRollups(context.Background(), true)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// pruneEvery is how often retention runs.
func (s *server) pruneEvery() time.Duration { return min(s.cfg.Retention/10, time.Minute) }

func (s *server) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.pruneEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-s.cfg.Retention)
		n, err := s.store.Prune(cutoff)
		if err != nil {
			s.log.Error("retention", "err", err)
		} else if n > 0 {
			s.log.Info("retention removed segments", "segments", n)
		}
		s.fleet.prune(time.Now(), s.cfg.Retention)
	}
}
