// A real redis-server for tests: a child process on a free loopback port (no
// persistence), killed when the RedisServer ends. Used by the Redis store and ledger tests.
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tresor::test {

constexpr const char* kRedisServer = "/usr/bin/redis-server";

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// A port nothing listens on right now: bind to port 0 and let the kernel choose.
inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  close(fd);
  REQUIRE(ok);
  return ntohs(a.sin_port);
}

// One redis-server child process on 127.0.0.1; killed (SIGKILL) on destruction. Fails
// the test when redis-server is not installed: CI installs it, so skipping would hide
// the store going untested.
class RedisServer {
 public:
  RedisServer() : port_(free_port()) {
    char tmpl[] = "/tmp/tresor-redis-log-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    log_ = tmpl;
    start();
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove(log_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& suffix = "/0") const {
    return "redis://127.0.0.1:" + std::to_string(port_) + suffix;
  }

  void start() {
    if (access(kRedisServer, X_OK) != 0)
      FAIL(kRedisServer << " is missing: install redis-server (apt-get install redis-server) to run the [redis] tests");
    const std::string port = std::to_string(port_);
    std::vector<std::string> args{kRedisServer, "--port", port,          "--bind",      "127.0.0.1",
                                  "--save",     "",       "--appendonly", "no",         "--daemonize",
                                  "no"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test run
      int out = open(log_.c_str(), O_WRONLY | O_TRUNC);
      int in = open("/dev/null", O_RDONLY);
      if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
      }
      if (in >= 0) dup2(in, 0);
      execv(kRedisServer, argv.data());
      _exit(127);
    }
    pid_ = pid;
    // Ready once PING answers; bounded, not a fixed sleep.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (;;) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL("redis-server on port " << port_ << " exited (status " << status << "): " << log_text());
      }
      Reply pong = command({"PING"});
      if (pong && pong->type == REDIS_REPLY_STATUS && std::string(pong->str) == "PONG") return;
      if (std::chrono::steady_clock::now() > deadline)
        FAIL("redis-server on port " << port_ << " did not answer PING within 3 s: " << log_text());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // SIGSTOP/SIGCONT: a Redis that accepts connections but never answers.
  void pause() { kill(pid_, SIGSTOP); }
  void resume() { kill(pid_, SIGCONT); }

  // One command on a fresh admin connection (database `db`); null if Redis is unreachable.
  Reply command(const std::vector<std::string>& args, int db = 0) const {
    std::unique_ptr<redisContext, void (*)(redisContext*)> c(
        redisConnectWithTimeout("127.0.0.1", port_, timeval{0, 200000}), redisFree);
    if (!c || c->err) return nullptr;
    if (db != 0) Reply select(static_cast<redisReply*>(redisCommand(c.get(), "SELECT %d", db)));
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(
        redisCommandArgv(c.get(), static_cast<int>(args.size()), argv.data(), lens.data())));
  }

 private:
  std::string log_text() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  int port_;
  pid_t pid_ = -1;
  std::string log_;
};

}  // namespace tresor::test
