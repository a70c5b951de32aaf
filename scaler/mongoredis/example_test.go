package mongoredis_test

import (
	"context"
	"log"
	"time"

	"github.com/sss-go/sss/scaler"
	"github.com/sss-go/sss/scaler/mongoredis"
)

// ExampleNew connects an instance to MongoDB and Redis. Every instance of
// the deployment runs the same code with the same options.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := mongoredis.New(ctx, mongoredis.Options{
		MongoURI:         "mongodb://127.0.0.1:27017",
		RedisURL:         "redis://127.0.0.1:6379/0",
		Database:         "myapp",
		Prefix:           "myapp",
		DefaultRetention: scaler.Retention{MaxCount: 500, MaxAge: time.Hour},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sc.Close(context.Background())
	// Hand sc to server.New; a process that only publishes uses it as is:
	uid, err := sc.Publish(ctx, "news", "headline", []byte(`{"title":"hello"}`), scaler.PublishOptions{})
	if err != nil {
		log.Fatal(err)
	}
	log.Println("stored as", uid)
}
