// cpp_raii.cpp: fastrpc from C++17 with small RAII wrappers over the C API.
//
//   ./build/cpp_raii
//
// Checks at start-up that the library loaded is the one the header describes, starts a
// server in this process whose handler is a lambda, then calls it: blocking calls with a
// reused Response, an async call whose callback is a lambda too, queued calls whose
// completion queue is waited for with poll(2) on its file descriptor, a request that makes
// the handler throw (the client gets the configured error reply), and a call to a port where
// nothing listens (a fastrpc::Error carrying FASTRPC_STATUS_CONNECT and the message).
//
// The wrappers in namespace `fastrpc` are meant to be copied and grown:
//   - every handle is a std::unique_ptr with a deleter that calls the matching _free;
//   - every failing status becomes a fastrpc::Error (status + the detailed message);
//   - names and values are std::string_view: no copies on the way in, and views into the
//     request or response on the way out (valid as long as that object, see each method);
//   - C callbacks are static noexcept trampolines with the C signature that get the C++
//     callable through userdata. Exceptions never cross into C: the trampolines catch all.

#include <fastrpc.h>

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace fastrpc {

// ---------------------------------------------------------------------------------------
// Errors

// A failed fastrpc call: the status (what kind of failure, stable values) and the message.
class Error : public std::runtime_error {
public:
    Error(fastrpc_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    fastrpc_status status() const noexcept { return status_; }

private:
    fastrpc_status status_;
};

// Reads a text the C API writes into a caller buffer (growing the buffer if it was cut).
template <class F>
std::string read_text(F &&write) {
    std::string s(256, '\0');
    size_t len = 0;
    if (write(s.data(), s.size(), &len) == FASTRPC_STATUS_BUFFER_TOO_SMALL) {
        s.assign(len + 1, '\0');
        write(s.data(), s.size(), &len);
    }
    s.resize(len);
    return s;
}

inline std::string status_message(fastrpc_status st) {
    return read_text([st](char *b, size_t n, size_t *l) { return fastrpc_status_message(st, b, n, l); });
}

// Throws if `st` is not OK, with the details this thread's last failure left behind.
inline void check(fastrpc_status st, const char *what) {
    if (st == FASTRPC_STATUS_OK) return;
    std::string details = read_text(fastrpc_last_error_message);
    throw Error(st, std::string(what) + ": " + status_message(st) + (details.empty() ? "" : " (" + details + ")"));
}

inline const uint8_t *bytes(std::string_view s) { return reinterpret_cast<const uint8_t *>(s.data()); }

// unique_ptr whose deleter calls the C API's _free function.
template <class T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

// ---------------------------------------------------------------------------------------
// Config builders (copied by client/server creation, so they can be reused or dropped)

class ClientConfig {
public:
    explicit ClientConfig(const std::string &addr) {
        fastrpc_client_config_builder *b = nullptr;
        check(fastrpc_client_config_builder_new(&b), "client config");
        b_.reset(b);
        check(fastrpc_client_config_builder_set_addr(b_.get(), addr.c_str()), "set_addr");
    }
    ClientConfig &compression(fastrpc_compression c) {
        check(fastrpc_client_config_builder_set_compression(b_.get(), c), "set_compression");
        return *this;
    }
    ClientConfig &request_timeout(std::chrono::milliseconds t) {
        check(fastrpc_client_config_builder_set_request_timeout_ms(b_.get(), static_cast<uint32_t>(t.count())),
              "set_request_timeout_ms");
        return *this;
    }
    ClientConfig &reconnect_backoff(std::chrono::milliseconds min, std::chrono::milliseconds max) {
        check(fastrpc_client_config_builder_set_reconnect_backoff_ms(b_.get(), static_cast<uint32_t>(min.count()),
                                                                     static_cast<uint32_t>(max.count())),
              "set_reconnect_backoff_ms");
        return *this;
    }
    const fastrpc_client_config_builder *get() const noexcept { return b_.get(); }

private:
    Handle<fastrpc_client_config_builder, fastrpc_client_config_builder_free> b_;
};

class ServerConfig {
public:
    ServerConfig() {
        fastrpc_server_config_builder *b = nullptr;
        check(fastrpc_server_config_builder_new(&b), "server config");
        b_.reset(b);
    }
    ServerConfig &compression(fastrpc_compression c) {
        check(fastrpc_server_config_builder_set_compression(b_.get(), c), "set_compression");
        return *this;
    }
    // The reply sent for a request the handler dropped unanswered (or threw on).
    ServerConfig &error_reply(std::string_view v) {
        check(fastrpc_server_config_builder_set_error_reply(b_.get(), bytes(v), v.size()), "set_error_reply");
        return *this;
    }
    const fastrpc_server_config_builder *get() const noexcept { return b_.get(); }

private:
    Handle<fastrpc_server_config_builder, fastrpc_server_config_builder_free> b_;
};

// ---------------------------------------------------------------------------------------
// Response: a call's outcome. Reuse one for many blocking calls: no allocation once warm.

class Response {
public:
    Response() {
        fastrpc_response *r = nullptr;
        check(fastrpc_response_new(&r), "response");
        r_.reset(r);
    }
    // Takes ownership of a response handed out by a callback or completion queue.
    explicit Response(fastrpc_response *owned) noexcept : r_(owned) {}

    fastrpc_status status() const noexcept { return fastrpc_response_status(r_.get()); }
    bool ok() const noexcept { return status() == FASTRPC_STATUS_OK; }
    // A view of the value: valid until this object is reused by another call or destroyed.
    std::string_view value() const noexcept {
        return {reinterpret_cast<const char *>(fastrpc_response_data(r_.get())), fastrpc_response_len(r_.get())};
    }
    std::string error_message() const {
        return read_text([this](char *b, size_t n, size_t *l) { return fastrpc_response_error_message(r_.get(), b, n, l); });
    }
    // Throws the failure this response holds, if any.
    void check_ok(const char *what) const {
        if (!ok()) throw Error(status(), std::string(what) + ": " + status_message(status()) + " (" + error_message() + ")");
    }
    fastrpc_response *get() const noexcept { return r_.get(); }

private:
    Handle<fastrpc_response, fastrpc_response_free> r_;
};

// ---------------------------------------------------------------------------------------
// Request: one request given to a server handler. Move-only; destroying it unanswered sends
// the server's error reply, so a client never waits for an answer that will not come.

class Request {
public:
    explicit Request(fastrpc_request *owned) noexcept : r_(owned) {}

    // Views valid until reply() or destruction, whichever comes first.
    std::string_view name() const noexcept { return view(fastrpc_request_name); }
    std::string_view value() const noexcept { return view(fastrpc_request_value); }
    // 0 exactly for a fire-and-forget request.
    uint32_t id() const {
        uint32_t id = 0;
        check(fastrpc_request_get_id(r_.get(), &id), "request id");
        return id;
    }
    // Who sent it: the client's address, and whether the connection is TLS.
    std::string peer_addr() const {
        size_t n = 0;
        check(fastrpc_request_peer_addr(r_.get(), nullptr, 0, &n), "peer address"); // measure
        std::string out(n + 1, '\0');
        check(fastrpc_request_peer_addr(r_.get(), &out[0], out.size(), &n), "peer address");
        out.resize(n);
        return out;
    }
    bool is_tls() const {
        bool tls = false;
        check(fastrpc_request_is_tls(r_.get(), &tls), "is_tls");
        return tls;
    }

    // Answers (once). The value is copied before this returns. Returns the status rather
    // than throwing: CLOSED (the client went away) is normal in a server.
    fastrpc_status reply(std::string_view v) noexcept { return fastrpc_request_reply(r_.get(), bytes(v), v.size()); }

private:
    using Getter = fastrpc_status (*)(const fastrpc_request *, const uint8_t **, size_t *);
    std::string_view view(Getter get) const noexcept {
        const uint8_t *p = nullptr;
        size_t n = 0;
        if (get(r_.get(), &p, &n) != FASTRPC_STATUS_OK) return {};
        return {reinterpret_cast<const char *>(p), n};
    }
    Handle<fastrpc_request, fastrpc_request_free> r_;
};

// ---------------------------------------------------------------------------------------
// CompletionQueue: queued calls complete into it. fd() is readable exactly while
// completions wait (level-triggered): put it in any event loop, then drain with poll(0).

class CompletionQueue {
public:
    struct Completion {
        uint64_t tag;
        fastrpc_status status;
        Response response;
    };

    CompletionQueue() {
        fastrpc_completion_queue *q = nullptr;
        check(fastrpc_completion_queue_new(&q), "completion queue");
        q_.reset(q);
    }
    int fd() const {
        int fd = -1;
        check(fastrpc_completion_queue_fd(q_.get(), &fd), "completion queue fd");
        return fd;
    }
    // Takes what is there now, never waits (timeout 0).
    std::vector<Completion> poll_now() const {
        fastrpc_completion out[64];
        size_t n = 0;
        check(fastrpc_completion_queue_poll(q_.get(), out, 64, 0, &n), "completion queue poll");
        std::vector<Completion> v;
        for (size_t i = 0; i < n; i++) v.push_back(Completion{out[i].tag, out[i].status, Response(out[i].response)});
        return v;
    }
    const fastrpc_completion_queue *get() const noexcept { return q_.get(); }

private:
    Handle<fastrpc_completion_queue, fastrpc_completion_queue_free> q_;
};

// ---------------------------------------------------------------------------------------
// Server with a C++ callable as handler.

class Server {
public:
    using Handler = std::function<void(Request)>;

    Server(const ServerConfig &cfg, const std::string &addr, Handler handler)
        : handler_(std::make_unique<Handler>(std::move(handler))) {
        fastrpc_server *s = nullptr;
        // userdata = the Handler, at a stable heap address for the server's whole life.
        check(fastrpc_server_new(cfg.get(), addr.c_str(), &Server::trampoline, handler_.get(), &s), "server");
        s_.reset(s);
    }
    // Stops gracefully, frees the server, then destroys the handler (members go in reverse
    // order: s_ before handler_). Only a stop that returned OK guarantees that no handler is
    // still running: fastrpc_server_free does not wait for one that is. So after a stop that
    // timed out the handler is deliberately leaked rather than destroyed under its feet.
    ~Server() {
        if (!stop(std::chrono::seconds(5))) (void)handler_.release();
    }
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    std::string local_addr() const {
        return read_text([this](char *b, size_t n, size_t *l) { return fastrpc_server_local_addr(s_.get(), b, n, l); });
    }
    fastrpc_server_stats stats() const {
        fastrpc_server_stats st{};
        st.struct_size = sizeof st; // the caller says which version of the struct it has
        check(fastrpc_server_get_stats(s_.get(), &st), "server stats");
        return st;
    }
    // Graceful stop: running handlers finish and their replies are flushed (up to `t`).
    // Returns false when connections were still busy at the deadline (closed at once).
    bool stop(std::chrono::milliseconds t) noexcept {
        return !s_ || fastrpc_server_stop(s_.get(), static_cast<uint32_t>(t.count())) == FASTRPC_STATUS_OK;
    }

private:
    // The C handler: runs on a library thread. Must not let an exception escape into C.
    static void trampoline(void *userdata, fastrpc_request *req) noexcept {
        Request r(req); // owns it now: freed (error reply if unanswered) however we leave
        try {
            (*static_cast<Handler *>(userdata))(std::move(r));
        } catch (const std::exception &e) {
            std::fprintf(stderr, "cpp_raii: handler threw: %s (the client gets the error reply)\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "cpp_raii: handler threw (the client gets the error reply)\n");
        }
    }

    std::unique_ptr<Handler> handler_;
    Handle<fastrpc_server, fastrpc_server_free> s_;
};

// ---------------------------------------------------------------------------------------
// Client

class Client {
public:
    using Callback = std::function<void(Response)>;

    explicit Client(const ClientConfig &cfg) {
        fastrpc_client *c = nullptr;
        check(fastrpc_client_new(cfg.get(), &c), "client");
        c_.reset(c);
    }

    // Blocking call into a reused response; returns a view of the value (valid until `into`
    // is reused). Throws fastrpc::Error on failure. timeout 0: the configured one.
    std::string_view call(std::string_view name, std::string_view value, Response &into,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        fastrpc_client_call(c_.get(), bytes(name), name.size(), bytes(value), value.size(),
                            static_cast<uint32_t>(timeout.count()), into.get());
        into.check_ok("call");
        return into.value();
    }
    // Convenience: a fresh response each time, value copied out.
    std::string call(std::string_view name, std::string_view value) const {
        Response r;
        return std::string(call(name, value, r));
    }

    // Async call: `cb` runs once on a library thread with the outcome (keep it short, no
    // blocking calls in it). Throws if the call could not even start (then `cb` never runs).
    // Returns the call's id, for cancel().
    uint64_t call_async(std::string_view name, std::string_view value, Callback cb) const {
        auto *heap = new Callback(std::move(cb)); // freed by the trampoline
        uint64_t id = 0;
        fastrpc_status st = fastrpc_client_call_async_id(c_.get(), bytes(name), name.size(), bytes(value),
                                                         value.size(), 0, &Client::trampoline, heap, &id);
        if (st != FASTRPC_STATUS_OK) {
            delete heap; // the callback will never run
            check(st, "call_async");
        }
        return id;
    }

    // Cancels a call still waiting: its callback (or completion) then comes with
    // FASTRPC_STATUS_CANCELLED, once. False when it had already completed.
    bool cancel(uint64_t id) const noexcept { return fastrpc_client_cancel(c_.get(), id) == FASTRPC_STATUS_OK; }

    // Queued call: completes into `q` with `tag`. Throws if it could not start.
    void call_queued(std::string_view name, std::string_view value, const CompletionQueue &q, uint64_t tag) const {
        check(fastrpc_client_call_queued(c_.get(), bytes(name), name.size(), bytes(value), value.size(), 0, q.get(),
                                         tag),
              "call_queued");
    }

    fastrpc_client_stats stats() const {
        fastrpc_client_stats s{};
        s.struct_size = sizeof s;
        check(fastrpc_client_get_stats(c_.get(), &s), "client stats");
        return s;
    }

private:
    static void trampoline(void *userdata, fastrpc_status, fastrpc_response *resp) noexcept {
        std::unique_ptr<Callback> cb(static_cast<Callback *>(userdata));
        Response r(resp); // the callback owns the response; freed when the Response goes
        try {
            (*cb)(std::move(r));
        } catch (...) {
            std::fprintf(stderr, "cpp_raii: async callback threw; ignored\n");
        }
    }

    Handle<fastrpc_client, fastrpc_client_free> c_;
};

} // namespace fastrpc

// ---------------------------------------------------------------------------------------

int main() {
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // keep stdout and stderr lines in order in a pipe
    // The library loaded must be the one this header describes (same major and minor).
    if (fastrpc_version_number() / 100 != FASTRPC_VERSION_NUMBER / 100) {
        std::fprintf(stderr, "cpp_raii: built for fastrpc %s, loaded %s\n", FASTRPC_VERSION, fastrpc_version());
        return 1;
    }
    try {
        std::atomic<int> handled{0};

        // A server whose handler is a lambda capturing local state. Names select behaviour:
        //   "echo"  -> name ":" value     "upper" -> value in upper case
        //   "fail"  -> the handler throws: the request is freed unanswered, error reply sent
        fastrpc::ServerConfig scfg;
        scfg.compression(FASTRPC_COMPRESSION_SNAPPY).error_reply("error: handler failed");
        //   "hold"  -> kept unanswered in `held` (to show cancelling a call)
        std::mutex held_mu;
        std::vector<fastrpc::Request> held;
        fastrpc::Server server(scfg, "127.0.0.1:0", [&handled, &held_mu, &held](fastrpc::Request req) {
            handled.fetch_add(1, std::memory_order_relaxed);
            std::string_view name = req.name();
            std::string_view value = req.value();
            if (name == "fail") throw std::runtime_error("asked to fail");
            if (name == "hold") { // kept unanswered until the demo lets it go
                std::lock_guard<std::mutex> lock(held_mu);
                held.push_back(std::move(req));
                return;
            }
            if (name == "whoami") {
                req.reply(req.peer_addr() + (req.is_tls() ? " (TLS)" : " (plaintext)"));
                return;
            }
            std::string out;
            if (name == "upper") {
                out.assign(value);
                for (char &c : out)
                    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
            } else {
                out.reserve(name.size() + 1 + value.size());
                out.append(name).append(":").append(value);
            }
            req.reply(out); // then `req` goes out of scope and is freed
        });
        const std::string addr = server.local_addr();
        std::printf("cpp_raii: server listening on %s (handler: a C++ lambda)\n", addr.c_str());

        fastrpc::Client client(fastrpc::ClientConfig(addr).compression(FASTRPC_COMPRESSION_SNAPPY));

        // Blocking calls with one reused Response; string_view in, string_view out.
        fastrpc::Response resp;
        for (std::string_view word : {"alpha", "beta", "gamma"}) {
            std::string_view v = client.call("echo", word, resp);
            std::printf("cpp_raii: call echo(%.*s) -> %.*s\n", static_cast<int>(word.size()), word.data(),
                        static_cast<int>(v.size()), v.data());
        }
        std::string up = client.call("upper", "string_view in, std::string out");
        std::printf("cpp_raii: call upper(...) -> %s\n", up.c_str());

        // Async call: the lambda runs on a library thread; a promise hands the result back.
        std::promise<std::string> promise;
        std::future<std::string> future = promise.get_future();
        client.call_async("echo", "async", [&promise](fastrpc::Response r) {
            if (r.ok()) promise.set_value(std::string(r.value()));
            else promise.set_value("failed: " + r.error_message());
        });
        std::printf("cpp_raii: call_async echo(async) -> %s\n", future.get().c_str());

        // Cancelling a call the server holds: its callback runs at once with CANCELLED; the
        // server's answer, when it comes, is dropped (counted in unexpected_responses).
        std::promise<fastrpc_status> cancelled;
        std::future<fastrpc_status> cancelled_f = cancelled.get_future();
        uint64_t id = client.call_async("hold", "x", [&cancelled](fastrpc::Response r) {
            cancelled.set_value(r.status());
        });
        for (int i = 0; i < 10000; i++) { // wait (at most 10 s) until the server holds it
            std::lock_guard<std::mutex> lock(held_mu);
            if (!held.empty()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        bool was_cancelled = client.cancel(id);
        fastrpc_status cst = cancelled_f.get();
        std::printf("cpp_raii: cancel(hold) -> %s, callback status %u (CANCELLED is %u); cancel again -> %s\n",
                    was_cancelled ? "cancelled" : "already done", static_cast<unsigned>(cst),
                    static_cast<unsigned>(FASTRPC_STATUS_CANCELLED), client.cancel(id) ? "cancelled" : "already done");
        if (!was_cancelled || cst != FASTRPC_STATUS_CANCELLED) return 1;
        {
            std::lock_guard<std::mutex> lock(held_mu);
            held.clear(); // freed unanswered: the error reply goes out, and the client drops it
        }

        // Queued calls, waited for with poll(2) on the queue's descriptor: the way to wait in
        // an event loop (epoll, libuv, asio, ...) instead of a thread blocked in a poll.
        fastrpc::CompletionQueue queue;
        client.call_queued("echo", "queued", queue, 1);
        client.call_queued("whoami", "", queue, 2);
        int done = 0;
        while (done < 2) {
            struct pollfd p = {queue.fd(), POLLIN, 0};
            if (::poll(&p, 1, 10000) != 1) {
                std::fprintf(stderr, "cpp_raii: the completion queue stayed empty for 10 s\n");
                return 1;
            }
            for (auto &c : queue.poll_now()) { // drain: timeout 0 until empty
                done++;
                std::string_view v = c.response.value();
                std::printf("cpp_raii: queued call %llu -> %.*s\n", static_cast<unsigned long long>(c.tag),
                            static_cast<int>(v.size()), v.data());
            }
        }

        // The handler throws: the trampoline catches it, the request is freed unanswered and
        // the client receives the configured error reply (a normal, OK response).
        std::string_view err = client.call("fail", "x", resp);
        std::printf("cpp_raii: call fail(x) -> %.*s\n", static_cast<int>(err.size()), err.data());

        // A failure surfaces as fastrpc::Error with its status and message. Port 1 on
        // loopback: nothing listens there, so the connect is refused at once.
        try {
            fastrpc::Client nowhere(fastrpc::ClientConfig("127.0.0.1:1").request_timeout(std::chrono::seconds(2)));
            nowhere.call("echo", "anyone?");
            std::printf("cpp_raii: unexpected success calling 127.0.0.1:1\n");
            return 1;
        } catch (const fastrpc::Error &e) {
            std::printf("cpp_raii: expected error, status %u: %s\n", static_cast<unsigned>(e.status()), e.what());
            if (e.status() != FASTRPC_STATUS_CONNECT) return 1;
        }

        fastrpc_client_stats cs = client.stats();
        fastrpc_server_stats ss = server.stats();
        std::printf("cpp_raii: client made %llu calls; server handled %d requests (%llu unanswered)\n",
                    static_cast<unsigned long long>(cs.calls), handled.load(),
                    static_cast<unsigned long long>(ss.unanswered));
        return cs.calls == 9 && handled.load() == 9 && ss.unanswered == 2 && cs.cancelled == 1 ? 0 : 1;
        // Destructors run in reverse order: response, client (closes its connection), then
        // the server (graceful stop, free, then the handler lambda).
    } catch (const fastrpc::Error &e) {
        std::fprintf(stderr, "cpp_raii: %s (status %u)\n", e.what(), static_cast<unsigned>(e.status()));
        return 1;
    }
}
