// k6: a constant arrival rate of reads on database-service (tests/ops/test_ops_k8s_autoscaling.py).
import http from "k6/http";

export const options = {
  scenarios: {
    rest: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: __ENV.DURATION,
      preAllocatedVUs: 20,
      maxVUs: 50,
    },
  },
  thresholds: { http_req_failed: ["rate<0.01"] },
};

export default function () {
  http.get(`${__ENV.BASE}/signals/history?limit=5`);
}
