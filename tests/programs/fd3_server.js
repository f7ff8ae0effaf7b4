// A Node server taking its socket as fd 3: server.listen({ fd: 3 }).
const http = require('http');
http.createServer((req, res) => res.end(`pid=${process.pid}\n`))
  .listen({ fd: 3 }, () => console.log(`ready pid=${process.pid}`));
process.on('SIGTERM', () => process.exit(0));
