package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sss-go/sss/protocol"
	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/server"
)

// app is the chat: its sss server and its HTTP routes.
type app struct {
	srv *server.Server
	mux *http.ServeMux
	log *slog.Logger
}

// config is what the command line sets.
type config struct {
	hb      time.Duration // heartbeat interval, 0 = off
	spread  time.Duration // shutdown spread, 0 = the server's default
	connect time.Duration // how long to try reaching MongoDB and Redis at startup
	log     *slog.Logger
}

// newApp builds the chat on sc (nil: in-memory).
func newApp(sc scaler.Scaler, cfg config) (*app, error) {
	hb := cfg.hb
	if hb <= 0 {
		hb = -1
	}
	a := &app{log: cfg.log, mux: http.NewServeMux()}
	srv, err := server.New(context.Background(), sc, server.Options{
		SessionParser:      parseSession,
		SubscriptionParser: parseSubscription,
		DefaultChannel:     server.ChannelOptions{Presence: true, History: true},
		HeartbeatInterval:  hb,
		ShutdownSpread:     cfg.spread,
		Logger:             cfg.log,
	})
	if err != nil {
		return nil, err
	}
	a.srv = srv
	srv.HandleAsk("rooms", a.rooms)
	srv.HandleAsk("echo", func(_ context.Context, _ *server.Socket, msg json.RawMessage) (any, error) { return msg, nil })
	srv.HandleAsk("whoami", whoami)
	srv.HandleAsk("members", a.members)
	srv.HandleAsk("announce", a.announce)
	srv.HandleAsk("kick", a.kick)
	srv.HandleAsk("history", a.history)
	srv.HandleAsk("who", a.who)
	srv.HandleTell("post", a.post)
	srv.HandleTell("dm", a.dm)

	a.mux.Handle("/ws", srv)
	a.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(indexHTML)
	})
	a.mux.Handle("GET /ready", srv.ReadyHandler())
	a.mux.Handle("GET /sss.js", server.ClientScriptHandler())
	a.mux.Handle("GET /sss.d.ts", server.ClientScriptHandler())
	return a, nil
}

// parseSession takes the user from the "user" query parameter, else the
// "sss_user" cookie, else none. (The server checked the Origin.)
func parseSession(r *http.Request) (*server.Session, error) {
	s := &server.Session{}
	if q := r.URL.Query(); q.Has("user") && q.Get("user") != "" {
		s.User = q.Get("user")
	} else if c, err := r.Cookie("sss_user"); err == nil && c.Value != "" {
		s.User = c.Value
	}
	return s, nil
}

// parseSubscription accepts every valid room except "forbidden".
func parseSubscription(_ context.Context, _ *server.Socket, channel string, _ json.RawMessage) (*server.ChannelOptions, error) {
	if channel == "forbidden" {
		return nil, forbidden("this room is forbidden")
	}
	return nil, nil
}

func forbidden(msg string) *protocol.Error {
	return &protocol.Error{Name: "Forbidden", Message: msg, Code: protocol.CodeForbidden}
}

func badRequest(msg string) *protocol.Error {
	return &protocol.Error{Name: "BadRequest", Message: msg, Code: protocol.CodeBadRequest}
}

// validRoom reports whether name is a room a client may use.
func validRoom(name string) bool {
	return protocol.ValidChannel(name, protocol.DefaultMaxChannelLen) && !protocol.ReservedChannel(name)
}

func userOrNil(sock *server.Socket) any {
	if u := sock.User(); u != "" {
		return u
	}
	return nil
}

func (a *app) rooms(context.Context, *server.Socket, json.RawMessage) (any, error) {
	rooms := []string{}
	for _, c := range a.srv.Channels() {
		if !strings.HasPrefix(c, "_") {
			rooms = append(rooms, c)
		}
	}
	return rooms, nil
}

func whoami(_ context.Context, sock *server.Socket, _ json.RawMessage) (any, error) {
	return userOrNil(sock), nil
}

func (a *app) members(ctx context.Context, _ *server.Socket, msg json.RawMessage) (any, error) {
	var m struct {
		Room string `json:"room"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !validRoom(m.Room) {
		return nil, badRequest("members wants {\"room\":\"<name>\"}")
	}
	return a.srv.Count(ctx, m.Room)
}

func (a *app) announce(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
	if sock.User() != "admin" {
		return nil, forbidden("only admin may announce")
	}
	var m struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, badRequest("announce wants {\"text\":\"<text>\"}")
	}
	if err := a.srv.Broadcast(ctx, "announcement", map[string]string{"text": m.Text}); err != nil {
		return nil, err
	}
	return true, nil
}

func (a *app) kick(ctx context.Context, sock *server.Socket, msg json.RawMessage) (any, error) {
	if sock.User() != "admin" {
		return nil, forbidden("only admin may kick")
	}
	var m struct {
		User   string `json:"user"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || m.User == "" {
		return nil, badRequest("kick wants {\"user\":\"<id>\",\"reason\":\"<text>\"}")
	}
	if err := a.srv.BootUser(ctx, m.User, m.Reason); err != nil {
		return nil, err
	}
	return true, nil
}

// tellError reports a dropped tell to its sender as a tell on topic
// "error".
func (a *app) tellError(sock *server.Socket, topic string, e *protocol.Error) {
	a.log.Warn("chat: tell dropped", "socket", sock.ID(), "topic", topic, "err", e.Message)
	_ = sock.Tell("error", e)
}

func (a *app) post(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
	var m struct {
		Room string `json:"room"`
		Text string `json:"text"`
		Echo *bool  `json:"echo"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !validRoom(m.Room) {
		a.tellError(sock, "post", badRequest("post wants {\"room\":\"<valid room>\",\"text\":\"<text>\"}"))
		return
	}
	opts := server.PublishOptions{}
	if m.Echo != nil && !*m.Echo {
		opts.Exclude = sock
	}
	body := struct {
		Text string `json:"text"`
		User any    `json:"user"`
	}{m.Text, userOrNil(sock)}
	if _, err := a.srv.Publish(ctx, m.Room, "message", body, opts); err != nil {
		a.log.Warn("chat: post failed", "socket", sock.ID(), "channel", m.Room, "err", err)
		_ = sock.Tell("error", &protocol.Error{Name: "Unavailable", Message: "could not post, retry", Code: protocol.CodeUnavailable})
	}
}

func (a *app) dm(ctx context.Context, sock *server.Socket, msg json.RawMessage) {
	var m struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !protocol.ValidUserID(m.To) {
		a.tellError(sock, "dm", badRequest("dm wants {\"to\":\"<user id>\",\"text\":\"<text>\"}"))
		return
	}
	body := struct {
		Text string `json:"text"`
		From any    `json:"from"`
	}{m.Text, userOrNil(sock)}
	if _, err := a.srv.Publish(ctx, server.UserChannel(m.To), "dm", body, server.PublishOptions{}); err != nil {
		a.log.Warn("chat: dm failed", "socket", sock.ID(), "user", m.To, "err", err)
		_ = sock.Tell("error", &protocol.Error{Name: "Unavailable", Message: "could not send, retry", Code: protocol.CodeUnavailable})
	}
}

// maxHistory bounds the history ask's limit.
const maxHistory = 100

// historyTimeout bounds the backend read of one history ask.
const historyTimeout = 10 * time.Second

// historyItem is one publication in the history ask's answer.
type historyItem struct {
	UID   string          `json:"uid"`
	Topic string          `json:"topic"`
	Msg   json.RawMessage `json:"msg"`
	Time  time.Time       `json:"time,omitzero"` // when it was stored
}

// history answers {"room":R,"limit":N} with the room's last N (at most
// 100; 0 or absent means 100) publications, oldest first, with their uids:
// a page shows them, then subscribes from the newest uid.
func (a *app) history(ctx context.Context, _ *server.Socket, msg json.RawMessage) (any, error) {
	var m struct {
		Room  string `json:"room"`
		Limit int    `json:"limit"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !validRoom(m.Room) || m.Limit < 0 {
		return nil, badRequest("history wants {\"room\":\"<name>\",\"limit\":<1..100>}")
	}
	if m.Limit == 0 || m.Limit > maxHistory {
		m.Limit = maxHistory
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	pubs, err := a.srv.History(ctx, m.Room, m.Limit)
	if err != nil {
		a.log.Warn("chat: history failed", "channel", m.Room, "err", err)
		return nil, &protocol.Error{Name: "Unavailable", Message: "history is unavailable, retry", Code: protocol.CodeUnavailable}
	}
	out := make([]historyItem, 0, len(pubs))
	for _, p := range pubs {
		out = append(out, historyItem{UID: p.UID.String(), Topic: p.Topic, Msg: p.Msg, Time: p.Time})
	}
	return out, nil
}

// whoEntry is one user in the who ask's answer; User is null for the
// anonymous sockets.
type whoEntry struct {
	User    *string `json:"user"`
	Sockets int     `json:"sockets"`
}

// who answers {"room":R} with the room's members on every instance: each
// user with its number of sockets, sorted, the anonymous ones last.
func (a *app) who(ctx context.Context, _ *server.Socket, msg json.RawMessage) (any, error) {
	var m struct {
		Room string `json:"room"`
	}
	if err := json.Unmarshal(msg, &m); err != nil || !validRoom(m.Room) {
		return nil, badRequest("who wants {\"room\":\"<name>\"}")
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	members, err := a.srv.Presence(ctx, m.Room)
	if err != nil {
		a.log.Warn("chat: who failed", "channel", m.Room, "err", err)
		return nil, &protocol.Error{Name: "Unavailable", Message: "presence is unavailable, retry", Code: protocol.CodeUnavailable}
	}
	counts := map[string]int{}
	anonymous := 0
	for _, mb := range members {
		if mb.User == "" {
			anonymous++
		} else {
			counts[mb.User]++
		}
	}
	out := make([]whoEntry, 0, len(counts)+1)
	for u, n := range counts {
		out = append(out, whoEntry{User: &u, Sockets: n})
	}
	sort.Slice(out, func(i, j int) bool { return *out[i].User < *out[j].User })
	if anonymous > 0 {
		out = append(out, whoEntry{Sockets: anonymous})
	}
	return out, nil
}
