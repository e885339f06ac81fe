-- Orders are keyed by the id the data carries, so storing the same order twice is a no-op.
-- Prices are exact decimals; the checks repeat the service's validation as a last line.
CREATE TABLE orders (
    orderid    bigint         PRIMARY KEY CHECK (orderid > 0),
    customer   text           NOT NULL CHECK (length(btrim(customer)) BETWEEN 1 AND 200),
    price      numeric(12, 2) NOT NULL CHECK (price >= 0),
    created_at timestamptz    NOT NULL DEFAULT now()
);
