package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sss-go/sss/internal/testutil"
)

// runMainEnv makes the test binary run the chat's main instead of the
// tests, so a test can watch the real program start and exit.
const runMainEnv = "SSS_CHAT_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	testutil.Main(m)
}

// TestStartupDeadMongo: with MONGO_URI naming a port where nothing
// listens, the chat logs where it connects (password redacted) first,
// then exits non-zero within its connect timeout, printing an error that
// names the address.
func TestStartupDeadMongo(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-connect-timeout", "500ms")
	cmd.Env = append(os.Environ(), runMainEnv+"=1",
		"MONGO_URI=mongodb://chat:hunter2@"+dead+"/?appName=chat",
		"REDIS_URL=redis://:hunter2@"+dead+"/0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the chat still runs %v after start with a dead MongoDB; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	}
	took := time.Since(start)
	text := out.String()
	t.Logf("exited after %v: %v; output:\n%s", took.Round(time.Millisecond), err, text)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit: %v, want a non-zero exit code", err)
	}
	first, _, _ := strings.Cut(text, "\n")
	if !strings.Contains(first, "connecting to") || !strings.Contains(first, "mongodb://chat:xxxxx@"+dead) {
		t.Errorf("first line %q: want it to say where the chat connects, password redacted", first)
	}
	if strings.Contains(text, "hunter2") {
		t.Errorf("the output shows the password")
	}
	if !strings.Contains(text, dead) || !strings.Contains(text, "unavailable") {
		t.Errorf("the output does not name %s and say the backend is unavailable", dead)
	}
}

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"mongodb://u:p@h1:1,h2:2/db?replicaSet=rs": "mongodb://u:xxxxx@h1:1,h2:2/db?replicaSet=rs",
		"redis://:secret@127.0.0.1:6379/0":         "redis://:xxxxx@127.0.0.1:6379/0",
		"mongodb://user@host/":                     "mongodb://user@host/",
		"mongodb://host/?authSource=a@b":           "mongodb://host/?authSource=a@b",
		"mongodb+srv://u:p:q@cluster/x":            "mongodb+srv://u:xxxxx@cluster/x",
		"host:6379":                                "host:6379",
	} {
		if got := redactURI(in); got != want {
			t.Errorf("redactURI(%q) = %q, want %q", in, got, want)
		}
	}
}
